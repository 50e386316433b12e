"""Model references: hub names, local folders and tiny from-scratch models built offline."""
