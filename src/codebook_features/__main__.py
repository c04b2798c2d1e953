import sys

from codebook_features.cli import main

sys.exit(main())
