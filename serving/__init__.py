"""SavedModel export in TF Serving's layout and a model server speaking TF Serving's protocol."""
