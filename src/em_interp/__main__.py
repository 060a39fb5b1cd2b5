from em_interp.cli import main

main()
