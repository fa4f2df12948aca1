"""`dlopt ensemble`: ensembles of trained runs, scored beside their members (dlopt/apps/ensemble.py is the command).

members.py: the finished runs of a sweep or a list, read as data (metrics.json, predictions.npz), checked to share
            their data
selection.py: which members and with what weight: the best k, or greedy selection (Caruana et al. 2004)
scores.py: accuracy, NLL and expected calibration error of predicted probabilities
plot.py: ensemble.png
Reads files only: no torch.
"""
