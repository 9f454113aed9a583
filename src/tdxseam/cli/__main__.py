"""`python -m tdxseam.cli`: the same command as the `tdxseam` console script."""

from tdxseam.cli import main

if __name__ == "__main__":
    main()
