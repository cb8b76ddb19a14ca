"""Names the CLI needs without importing torch: the tasks and the default batch size."""

TASKS = ("zeroshot_classification", "zeroshot_retrieval", "linear_probe", "detection")
DEFAULT_BATCH_SIZE = 256  # images per batch: react-index embed's default too
