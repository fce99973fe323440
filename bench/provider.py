"""The fake message provider for the benchmarks: the KakaoTalk / SMS gateway behind jobq's
message webhook, over a real socket in the bench's own process (the server is
tests/fake_provider.py, the one the tests use). It takes ``rate`` messages per clock second,
answers 429 above that, and records when each message arrived and for which academy (the
``[academy name]`` its subject starts with), so the bench reports what the provider saw."""

from __future__ import annotations

from tests.fake_provider import FakeProvider


class Provider(FakeProvider):
    def env(self) -> dict[str, str]:
        """The workers' settings that send KakaoTalk messages here at ``rate``."""
        return {"JOBQ_NOTIFY_WEBHOOK_URL": self.messages_url,
                "JOBQ_NOTIFY_WEBHOOK_SECRET": "bench", "JOBQ_SEND_RATES": f"kakao={self.rate}"}
