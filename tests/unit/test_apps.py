"""The app registry and what Tandem's two apps ask of a bundle (tandem/apps/)."""

from __future__ import annotations

import pytest

from tandem.apps.celebmatch import gallery, kit
from tandem.apps.celebmatch.app import CelebMatch, MatchOptions
from tandem.apps.classify import Classify, ClassifyOptions
from tandem.apps.registry import Apps, builtin
from tandem.bundle import Manifest, TensorSpec
from tandem.errors import ConfigError, InvalidRequest, NotFound
from tests.unit.test_bundle import manifest as bundle_manifest


def manifest(**kw) -> Manifest:
    """test_bundle's manifest, with an fp32 model only."""
    return bundle_manifest(**{"models": {"fp32": "model.onnx"}, **kw})


def test_the_registry_lists_apps_by_name_and_refuses_two_of_one_name():
    apps = Apps(builtin())
    assert apps.names == ["celebmatch", "classify", "deepart"]
    with pytest.raises(NotFound, match="unknown app 'paint'; apps: celebmatch, classify, deepart"):
        apps.get("paint")
    with pytest.raises(ConfigError, match="two apps are named 'classify'"):
        Apps([Classify(), Classify()])


def test_each_app_says_which_bundles_it_serves_and_why_not():
    embedding = [TensorSpec(name="embedding", dtype="float32", shape=[-1, 8])]
    classifier = manifest()
    enrolled = manifest(apps={"celebmatch": {"gallery": "gallery.npz"}})
    face_net = manifest(task="face-embedding", outputs=embedding, labels=[], apps={"celebmatch": {}})
    assert [a.name for a in Apps(builtin()).serving(classifier)] == ["classify"]
    assert [a.name for a in Apps(builtin()).serving(enrolled)] == ["celebmatch", "classify"]
    assert [a.name for a in Apps(builtin()).serving(face_net)] == ["celebmatch"]
    assert CelebMatch().unsupported(classifier).startswith("has no celebmatch gallery: enrol one with")
    assert "is not a classifier (task face-embedding: outputs embedding" in Classify().unsupported(face_net)
    # The bundle format asks for no output by name (bundle.py): each app checks those it reads.
    no_embedding = manifest(outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2])],
                            apps={"celebmatch": {}})
    assert "has no 'embedding' output" in CelebMatch().unsupported(no_embedding)
    assert Classify().unsupported(no_embedding) is None


def test_options_come_from_the_query_with_defaults_and_clear_refusals():
    assert Classify().options({}) == ClassifyOptions(5)
    assert CelebMatch().options({"detect": "0", "top_k": "7"}) == MatchOptions(False, 7)
    with pytest.raises(InvalidRequest, match="query parameter detect='maybe': expected true or false"):
        CelebMatch().options({"detect": "maybe"})
    with pytest.raises(InvalidRequest, match="query parameter top_k='101': expected a whole number from 1 to 100"):
        Classify().options({"top_k": "101"})


def test_celebmatch_names_the_manifest_sections_its_enrolment_and_export_write():
    assert CelebMatch.sections == (gallery.APP, kit.APP)
