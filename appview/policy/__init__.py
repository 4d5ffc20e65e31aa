"""A repository's tag rules (`io.atcr.repo.policy` in the owner's PDS): immutable tags and
retention. `rules` is pure (parsing, matching, the retention plan); `store` reads the record."""
