"""What the survey lets higher apps do (registered in their ``AppConfig.ready``).

- ``link_opened(link, at)``: a personal link was opened for the first time (in the write's
  transaction). ``distributions`` moves the recipient row that carried it to Opened.
- ``response_completed(responses)``: responses were recorded as complete (in the write's
  transaction): one, or a batch of two-way SMS conversations' at once. ``distributions``
  sends the thank-you emails triggered by completion, after commit (one task for them all).
"""

from __future__ import annotations

from core.hooks import Hook

link_opened = Hook("surveys.link_opened")
response_completed = Hook("surveys.response_completed")
