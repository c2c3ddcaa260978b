"""The territory's charter: purposes, categories, rules and budgets, stored by version."""
