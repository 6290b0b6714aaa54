"""Stand-in for the pre-1.8 module name `modules.generation_parameters_copypaste`.

v1.8.0+ renamed it to modules/infotext_utils.py and registers the old name as an alias of the new
module in sys.modules (modules/infotext_utils.py:L14 `generation_parameters_copypaste`); importing this name therefore yields the
very same module object as `modules.infotext_utils`, as in the WebUI.
"""

from __future__ import annotations

import sys

from modules import infotext_utils

sys.modules[__name__] = infotext_utils
