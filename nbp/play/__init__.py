"""`nbp play`: a world model of either family played in the browser (`server`), with a key map per game
(`keymaps`)."""
