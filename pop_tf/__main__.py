"""`python -m pop_tf` is the `pop-tf` command."""

import sys

from pop_tf.cli import main

sys.exit(main())
