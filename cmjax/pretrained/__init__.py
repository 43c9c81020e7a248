"""Pretrained networks whose weights come from registry packages (never a download):
EfficientNet-Lite0 (`efficientnet`), the legacy PyTorch file reader it needs
(`torch_file`), and the content-addressed cache of computed features (`cache`)."""
