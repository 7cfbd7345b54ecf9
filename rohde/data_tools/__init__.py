"""`rohde data`: simulate, summarise, plot, baseline and spread recordings (plots need the `[train]` extra)."""
