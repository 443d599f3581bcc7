"""Storage backends: s3 (boto3) and file. Built from Settings.storage_url by `open_storage`."""
