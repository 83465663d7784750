"""Start the ProLab Explorer app: ``python app.py [--help]``."""
from app.main import main

if __name__ == "__main__":
    main()
