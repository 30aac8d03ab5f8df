"""ml_collections config files. Each defines get_config(); see its docstring for the launch line."""
