"""Entry point for `python -m overcommit`."""

from overcommit.cli import main

if __name__ == "__main__":
    main()
