"""Tasks of the OpenUS-MONAI MONAI Label app (see ``../main.py``)."""
