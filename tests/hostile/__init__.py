"""The project's own adversarial suite: what a careless operator or a hostile app author does."""
