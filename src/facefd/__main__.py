"""python -m facefd ...: the same as the installed facefd command."""
from facefd.cli import main

if __name__ == "__main__":
    main()
