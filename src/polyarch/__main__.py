from polyarch.cli import main

main()
