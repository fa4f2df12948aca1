"""`dlopt explain`: which inputs a trained network relies on, by Captum's attribution methods, and how far each
explanation can be trusted (dlopt/apps/explain.py is the command).

features.py: the interpretable features (image patches, signal segments, table columns), the samples, baselines
methods.py: the attribution methods by name, all of them Captum's
faithfulness.py: deletion curves against a random order, the model-randomization check, precision@K
plot.py: attributions.png, importance.png, faithfulness.png
explain.py: a saved run explained end to end, its files written
"""

GRADIENT = ("saliency", "integrated_gradients", "gradient_shap")
PERTURBATION = ("occlusion", "lime", "kernel_shap", "shapley_sampling")
METHODS = ("permutation", *GRADIENT, *PERTURBATION)  # here, without torch: the command checks them first
BASELINES = ("mean", "zero", "blur")
