"""Live: incremental reconstruction during acquisition, status stream, viewer and the all-in-one demo."""
