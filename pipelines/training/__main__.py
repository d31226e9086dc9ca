from pipelines.training.train import main

main()
