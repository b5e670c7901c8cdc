"""Alembic migrations; shipped inside the package so ``annoloop migrate`` finds them."""
