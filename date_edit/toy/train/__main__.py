"""``python -m date_edit.toy.train``: see :mod:`date_edit.toy.train.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
