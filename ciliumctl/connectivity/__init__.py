"""Who may talk to whom: the policy graph (`policy draw`), the effective connectivity matrix, and least-privilege
policies generated from flows (`policy generate`). Reads policy/ and flows/; renders nothing with rich."""
