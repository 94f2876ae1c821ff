"""The command line of a search (`search`: ``python -m tune.search`` runs it) and its dry run
(`plan`)."""
