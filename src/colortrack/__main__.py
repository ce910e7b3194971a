from colortrack.cli import run

if __name__ == "__main__":  # worker processes import this module again, and must not run
    run()
