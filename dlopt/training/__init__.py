"""Training: the LightningModule, building a run from its config, and what a run writes."""
