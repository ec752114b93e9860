import pytest

from tandem.errors import ConfigError, InvalidRequest, Unavailable
from tandem.registry.db import Database, registry_url
from tandem.registry.registry import Registry, check_alias_name
from tandem.settings import Settings


def test_plain_postgresql_urls_use_psycopg_3():
    for url in ("postgresql://u@h:5432/db", "postgres://u@h/db"):
        assert registry_url(url).drivername == "postgresql+psycopg"
    assert registry_url("sqlite:////tmp/x/registry.db").database == "/tmp/x/registry.db"


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://u@h/db", "runs on SQLite or PostgreSQL, not 'mysql'"),
    ("sqlite://", "needs a SQLite \\*file\\*"),
    ("not a url", "is not a database URL"),
])
def test_unusable_database_urls_are_config_errors(url, message):
    with pytest.raises(ConfigError, match=message):
        Database(url)


def test_a_database_that_is_down_is_unavailable_not_a_crash(tmp_path):
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused at once.
    settings = Settings(home=tmp_path, database_url="postgresql://postgres@127.0.0.1:9/test")
    with pytest.raises(Unavailable, match=r"registry database postgresql\+psycopg://postgres@127.0.0.1:9/test "
                                          r"is unavailable .*check that it is running"):
        Registry.open(settings)


def test_alias_names():
    for good in ("production", "beta", "canary-2", "v2_rc"):
        assert check_alias_name(good) == good
    for bad in ("42", "Production", "latest", "", "a/b", "x" * 65, "beta\n"):
        with pytest.raises(InvalidRequest):
            check_alias_name(bad)
