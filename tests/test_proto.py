"""The committed stubs match proto/ (regenerate with `python -m shardnet.protocol.codegen`)."""

from shardnet.protocol import codegen


def test_committed_stubs_are_current():
    assert codegen.main(["--check"]) == 0
