"""Searches replayed without training, on recorded learning curves.

- `table`: the tabulated benchmark (recorded by ``bench/tabular.py``): every report a trial of the
  grid would make, and the true front it implies;
- `replay`: a search run by the real Ray Tune schedulers and search algorithms on a virtual clock
  (``python -m tune.search --simulate TABLE``);
- `rank_agreement`: how well early reports rank trials as their final ones do.
"""
