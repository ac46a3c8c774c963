"""What a project's stage change lets higher apps do (registered in their ``AppConfig.ready``).

- ``project_resumed(project, paused_since, resend_missed, actor)``: a Paused project became
  Active again, inside the stage change's transaction. ``distributions`` resends, when asked,
  the distributions that failed while it was paused.
"""

from __future__ import annotations

from core.hooks import Hook

project_resumed = Hook("projects.project_resumed")
