"""Deterministic simulation testing of the runtime update protocol (docs/simulation.md).

- `scenario`: a `Scenario` generated from a seed (host, TDs, readers, interrupts, hotplug, updates,
  faults), printable as text and JSON, shrinkable;
- `invariants`: what must hold at every SEAMCALL, every scheduler step and the end of every
  update, with the spec's table of outcomes (spec-linux.md §5.7) as the oracle;
- `runner`: one scenario on one emulated host, every actor a task on a simulated CPU;
- `campaign`: many seeds over worker processes (or Ray);
- `replay`: a seed again, byte for byte, and shrinking of a failure;
- `schedules`: PCT priorities and bounded exhaustive exploration of small hosts;
- `stress`: the P-SEAMLDR call-path stress run (`tdxseam stress`).
"""
