from mlcbuild.cli import main

main()
