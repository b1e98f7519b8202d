"""The launcher writes one peer credential per edge, named after it in the other edges' configs
(configs only, no process is started)."""

from __future__ import annotations

from shared.auth import TokenStore

from edge.config import load
from harness.cluster import Cluster


async def test_each_edge_has_its_own_peer_credential_and_the_others_accept_it_under_its_id(tmp_path, monkeypatch):
    async def no_process(self, name, *, ready=True):
        return None

    monkeypatch.setattr(Cluster, "start_service", no_process)
    cluster = Cluster(tmp_path)
    await cluster.start()
    configs = {e: load(cluster.services[e].config_path) for e in cluster.edge_ids}
    for edge_id, cfg in configs.items():
        assert cfg.peer_token == cluster.peer_token(edge_id)
        assert sorted(t.name for t in cfg.tokens if t.role == "peer") == sorted(set(cluster.edge_ids) - {edge_id})
        accepted = TokenStore(cfg.tokens)
        for other in set(cluster.edge_ids) - {edge_id}:
            assert accepted.authenticate(cluster.peer_headers(other)["Authorization"]).name == other
    assert len({cluster.peer_token(e) for e in cluster.edge_ids}) == len(cluster.edge_ids)
    info = cluster.info()
    assert info["peer_tokens"] == {e: cluster.peer_token(e) for e in cluster.edge_ids}
    assert "peer" in info["tokens"]  # kept for old readers of cluster.json
    assert all(not any(t.name == "peer" for t in cfg.tokens) for cfg in configs.values())
