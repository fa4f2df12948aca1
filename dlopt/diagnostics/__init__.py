"""Diagnostics of training: what a run records about its layers (recorder.py, a Lightning callback),
the symptoms read from those records and its curves (symptoms.py, torch-free), the remedies for each
symptom as dlopt overrides (remedies.py) and `dlopt doctor`'s reading of a finished run (doctor.py)."""
