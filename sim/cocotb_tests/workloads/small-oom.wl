# description: the OOM killer on a 16M machine without swap (4M of it a hugetlb pool): the hog dies, the
# unkillable and the idle process live on
boot mem=16M hugepages=2
spawn idle
malloc x 256K
touch x
spawn protected adj=-1000
malloc y 512K
touch y
spawn hog
malloc big 8M
touch big
use idle
touch x
report top,free
