"""The builtin traffic router: splits OIP v2 / OpenAI-style requests between a rollout's blue and green
model servers by weight, with sticky keys, mirroring, and feedback routed to the colour that answered."""
