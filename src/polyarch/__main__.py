from polyarch.entry import main

main()
