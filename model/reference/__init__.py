"""The reference MMU: the walker, TLBs, page-walk cache and replacement policies that predict, request by
request, what the hardware must answer (docs/reference.md is the contract).
"""
