# description: a malloc the heap's top cannot hold gets its own mmap at or above M_MMAP_THRESHOLD (128K); free unmaps it and raises the threshold
boot mem=64M
spawn app
malloc small 64K
malloc big 128K
malloc huge 4M
touch huge 0 1M
free big
free huge
malloc again 1M
touch again
report maps
