"""The runtime tests' Ray session, for the commands that start the runtime."""
from tests.runtime.conftest import counting_factory, ray_session  # noqa: F401 (fixtures)
