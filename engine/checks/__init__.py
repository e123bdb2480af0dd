"""``turnout doctor``'s checks: the predicted attention path, the float32 reference and the golden
check of an engine against it."""
