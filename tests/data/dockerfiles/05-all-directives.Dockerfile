# syntax=docker/dockerfile:1.7
# escape=\
# check=skip=all
FROM alpine AS base
