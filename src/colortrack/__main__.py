from colortrack.cli import run

run()
