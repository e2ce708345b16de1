"""The project's adversarial suite: inputs as an attacker or a careless operator writes them."""
