from gocare_voice.cli import main

main()
