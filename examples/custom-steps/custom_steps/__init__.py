"""Steps of your own, run by `discovery pioneer --steps custom_steps.steps`."""
