"""The metadata catalogue: ORM models, engine set-up, migrations runner and the data-access store."""
