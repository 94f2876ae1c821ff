"""Running a search: the Ray Tune `Tuner` (`tuner`), the search algorithm handing out trials
(`searcher`), the run itself and its outputs (`driver`), and the storage failing mid-search
(`storage_faults`)."""
