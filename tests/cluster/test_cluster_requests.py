"""Request faults a real API server does not give on demand, on the fake (tests/fakeapi): an overloaded server's
429 Too Many Requests with Retry-After."""

import pytest

from ciliumctl.cluster.kube import KINDS, ApiFailure


def cm(name):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}


def test_an_overloaded_server_is_asked_again_after_the_time_it_says(fake_kube, fake):
    # fake: the real server answers 429 only when its priority levels are full, not on demand
    fake.retry_after = 0
    fake.fail_next(2, 429, "POST", "configmaps")    # a create too: a 429 means the server did nothing
    fake_kube.create(cm("a"))
    fake.fail_next(3, 429, "GET", "configmaps")
    assert [i["metadata"]["name"] for i in fake_kube.list(KINDS["ConfigMap"], "default")[0]] == ["a"]


def test_a_server_that_stays_overloaded_gives_its_own_answer(fake_kube, fake):
    # fake: as above
    fake.retry_after = 0
    fake.fail_next(4, 429, "POST", "configmaps")
    with pytest.raises(ApiFailure, match=r"^API server: injected failure 429 \(429 TooManyRequests\)$"):
        fake_kube.create(cm("b"))
    assert fake_kube.get(KINDS["ConfigMap"], "b", "default") is None
